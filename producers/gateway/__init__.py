"""``medocr gateway``: the original server's HTTP API, answered through Kafka.

HTTP senders post a scan (``/v1/ocr``, ``/v1/ocr/upload``, ``/v1/ocr/stream``, the
OpenAI-compatible ``/v1/chat/completions``); the gateway publishes it as an
``OcrRequest`` on their behalf and answers with the document's ``OcrResult`` (or streams
its text as the worker generates it). Nothing here imports ``consumers``: the CLI builds
the collaborators from the settings and hands plain values in.

::

    config.py   what the gateway is told at start (plain values)
    app.py      the app factory: its collaborators in, a FastAPI app out
    ocr.py      /v1/ocr, /v1/ocr/upload, /v1/ocr/stream
    chat.py     /v1/chat/completions
    probes.py   /health, /ready, /metrics
    auth.py     Authorization: Bearer <API_KEY>
    intake.py   request bodies read within their caps, and the OcrRequest they become
    images.py   base64, data: and file:// URLs, uploads -> the scan's bytes or URI
    remote.py   http(s) image URLs, when allowed: bounded in bytes and time
    source.py   the reply source seam (OcrClient behind it) and its readiness
    waits.py    waits in flight: the limit, duplicate request ids joining one wait
    streaming.py  progress events -> the document's text as it grows
    sse.py      chat.completion.chunk Server-Sent Events
    errors.py   the pipeline's error codes -> HTTP statuses, one table
    metrics.py  the gateway's Prometheus metrics
    server.py   uvicorn in the caller's event loop
"""
