"""Parts of the scheduler (``autopeft.api.scheduler``), one idea per module."""
