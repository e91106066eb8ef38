"""Kafka edge: connection settings and the admin requests aiokafka lacks, spoken on its protocol layer."""
