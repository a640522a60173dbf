"""Live execution behind the gate: the ``live_executor`` actor and its venue routers.

``facts`` (venue-neutral: a broker ``Fact``, a create's ``Outcome``, the
shells' errors), ``core`` (pure: a fact applied to one of our orders),
``worker`` (one venue's live orders, on the paper partition's contract) and
``executor`` (the actor: one leader per venue); per venue a pure protocol
module, an HTTP/stream shell and the worker's venue part: ``oanda_proto`` /
``oanda_broker`` / ``oanda_worker`` and ``coinbase_proto`` /
``coinbase_broker`` / ``coinbase_worker``.
"""
