"""Study webhooks (``spec.webhook``): signed JSON posted to a study's URL when it finishes, fails or
a new point joins its Pareto front.

``rules`` (the operator's allow-list, the checks at creation and before each request, signing and
redaction) and ``sender`` (the events thread that turns a study's events into deliveries, and the
delivery threads that post them with retries). The scheduler only enqueues. See docs/studies.md.
"""
