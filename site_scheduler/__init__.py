"""The site: an autonomous compute cell that accepts runs and executes them on its own workers."""
