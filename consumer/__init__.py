"""The consumer daemon (``s3convex run``): receive → decode → dispatch → apply → ack, one
module per stage, wired and supervised by :mod:`s3convex.consumer.daemon`; operator commands in
:mod:`s3convex.consumer.ops`; the command line in :mod:`s3convex.consumer.cli`."""
