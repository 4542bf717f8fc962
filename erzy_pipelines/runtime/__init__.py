"""What keeps runs honest around the sync engine: which process runs a sync and whether it is
alive, stopping on request, the ``erzycall_api`` pool slot, and cleaning up after dead runs."""
