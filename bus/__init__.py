"""The bus: NATS connection, subjects, wire schemas, codec and JetStream setup.

Imports flow ``api -> bus <- actors``; this package imports neither.
"""
