"""Span export: the span row, exporters that count and bound what they send,
and conversion between rows and what backends speak.
"""
