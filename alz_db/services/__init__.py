"""Work that spans many short units of work: the search worker and its proxy runs, re-training,
tuning, noise floors, distributed training, the HTML report, child processes.

They call the repositories, queries and store, never the ``cli``."""
