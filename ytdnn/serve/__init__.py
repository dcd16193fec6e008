"""Serving: the HTTP API over a Recommender, the event store that feeds fresh history back into
``recommend``, and a bounded loopback load test (``events``, ``loadtest``)."""
