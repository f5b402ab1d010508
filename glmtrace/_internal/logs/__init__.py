"""Logs: capture from the logging module, the ECS document, the shipper, its spool and the
remote sinks (Elasticsearch, Fluent forward).
"""
