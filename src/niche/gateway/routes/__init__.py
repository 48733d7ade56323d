"""The gateway's routes, one module per surface: ``openai`` (chat completions, models and the
pass-through relay), ``native`` (task predictions, health, metrics, the schema) and ``admin``.

Each module has a class built with the services it needs and a ``routes()`` list for the
:class:`~niche.gateway.routing.RouteTable`.
"""
