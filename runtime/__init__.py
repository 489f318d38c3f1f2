"""Running the system: connecting, worker assembly, settings from flags and
environment, logging, and retiring shards. Used by the entry points in
``script/``; imports ``actors`` and ``sinks``, never the reverse."""
