"""Kafka: the topics and message JSON of DOMAIN.md, and the local broker of the no-service default."""
