"""What an event is: the Avro contracts (avro/*.avsc) and the single-object codec."""
