"""Reports read run directories only: they need neither torch nor a GPU."""
