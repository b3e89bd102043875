"""The status API: the socket server, its client, and the pure renderings of a snapshot."""
