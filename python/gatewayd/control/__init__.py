"""Control plane: versioned documents, pointers, change records and the replica agent."""
