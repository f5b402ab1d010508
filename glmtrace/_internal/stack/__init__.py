"""The real backends on loopback, without Docker: Jaeger v2, an OTel Collector, Elasticsearch.

One starter for ``glmtrace stack`` and the integration tests: :mod:`.paths` finds the provisioned
binaries and the configs ``docker-compose.yml`` mounts, :mod:`.procs` runs and stops processes,
:mod:`.services` builds each backend's command line and waits until it answers, :mod:`.local`
keeps a detached stack under the cache directory, :mod:`.command` is the CLI.
"""
