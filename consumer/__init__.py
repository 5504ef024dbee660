"""s3convex: keeps S3 objects and their Convex asset records in sync.

The path of an event, one module per stage::

    receive.py → decode.py → dispatch.py (handlers/) → apply.py (Convex) → ack.py
"""

__version__ = "0.1.0"
