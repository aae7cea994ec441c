"""The local backend: ``kubenas run`` and ``kubenas report``, with no cluster."""
