"""What each S3 event means for an asset.

Handlers are registered explicitly in :data:`handlers.objects.registry`, keyed by event name
pattern (and optionally key pattern). Each takes an :class:`~consumer.models.ObjectEvent` and a
:class:`~handlers.context.HandlerContext` and returns the :class:`~handlers.asset.AssetChange`
to apply in Convex. Handlers never sleep and never retry: they raise
:class:`~consumer.errors.RetryableError` or :class:`~consumer.errors.PermanentError`.
"""
