"""A Redis-compatible (RESP2/RESP3) server over JetStream (DESIGN §6, issue 7).

by-framework workers and clients point their Redis host at ``jetledger redis`` and run
unmodified: its stream keys map onto the log's subjects, consumer groups onto durable
consumers, and hashes, sets, sorted sets, lists and strings onto KV buckets.
"""
