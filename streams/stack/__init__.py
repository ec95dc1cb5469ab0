"""The local stack without Docker: Kafka, Redis, HBase and its Thrift server on 127.0.0.1.

    from streams.stack import up, down, status
    up(["redis"])            # start (or reuse) services and wait until each answers
    status()                 # tuple of ServiceStatus, one per service
    down(["thrift"])         # stop what the stack started

Services, in start order: kafka (9092, SASL/PLAIN on 9094), redis (6379), hbase (the master
with its ZooKeeper and region server) and thrift (9090, what happybase talks to).
"""

from __future__ import annotations

from streams.stack.manager import SERVICES, ages, cpu_seconds, down, logs, status, up
from streams.stack.model import Action, ServiceChange, ServiceState, ServiceStatus

__all__ = [
    "SERVICES",
    "Action",
    "ServiceChange",
    "ServiceState",
    "ServiceStatus",
    "ages",
    "cpu_seconds",
    "down",
    "logs",
    "status",
    "up",
]
