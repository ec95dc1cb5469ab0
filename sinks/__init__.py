"""Sinks: one module per store (hbase, redis, faiss, metrics) behind one small contract."""
