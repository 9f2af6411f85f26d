"""The log server: storage, sequencer, gRPC service and its commands."""
