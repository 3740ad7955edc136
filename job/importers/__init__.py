"""One module per import type; each exposes `step(job, record) -> bool` working on one page."""
