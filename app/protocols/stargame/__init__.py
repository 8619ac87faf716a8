"""StarGame Game Notifications API: handler, outcome-unknown journal, reconciler."""
