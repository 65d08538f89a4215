"""The local stack of the no-service defaults and the commands on it: make day, make dev."""
