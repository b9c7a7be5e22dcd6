"""The server's side of every probe: a built-in OTLP trace receiver that takes vLLM's
``llm_request`` spans, joins each to the probe that caused it by trace id, and forwards
every span it received, unchanged, to the user's own OTLP endpoint.

``records`` and ``decode`` hold the data and its decoding, ``join`` the asynchronous match,
``receiver`` and ``forward`` the I/O; none of them knows the daemon or its config.
"""
