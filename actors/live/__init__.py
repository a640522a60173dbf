"""Live execution behind the gate: the ``live_executor`` actor and its venue routers.

``oanda_proto`` (pure: request bodies, answers and transactions to facts),
``core`` (pure: a fact applied to one of our orders), ``oanda_broker`` (the
HTTP shell), ``worker`` (one venue's live orders, on the paper partition's
contract) and ``executor`` (the actor: one leader per venue).
"""
