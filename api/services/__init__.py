"""Logic behind the REST handlers (handlers stay thin) and shared with the scheduler."""
