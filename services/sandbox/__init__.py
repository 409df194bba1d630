"""Sandbox portal: a local HTTP server that behaves like a Bitrix24 portal.

Domain (no HTTP): ``portal`` (the entry point, ``SandboxPortal.call``), ``methods`` (the REST
methods), ``crm`` and ``state`` (data and writes), ``schema``, ``naming``, ``values``, ``views``
(fields, names, values, renderings), ``query`` (filters, order, pages), ``batch``,
``brackets`` (PHP bracket keys), ``limits``, ``faults``, ``events``, ``timing``, ``errors``,
``seed`` (demo portal), ``persistence`` (state file).
HTTP and process: ``app`` (ASGI), ``delivery`` (event POSTs), ``main``, ``commands``.
"""
