"""What each S3 event means for an asset.

Handlers are registered explicitly in :data:`s3convex.handlers.objects.registry`, keyed by event name
pattern (and optionally key pattern). Each takes an :class:`~s3convex.core.events.ObjectEvent` and a
:class:`~s3convex.handlers.context.HandlerContext` and returns the :class:`~s3convex.core.asset.AssetChange`
to apply in Convex. Handlers never sleep and never retry: they raise
:class:`~s3convex.core.errors.RetryableError` or :class:`~s3convex.core.errors.PermanentError`.
"""
