"""Stream processors: one module per stage (embed, graph, feed, reconcile, search)."""
