"""The render-node agent: connects to a controller and runs jobs in child worker processes."""
