"""Everything OpenHIM: the mediator response envelope, orchestrations, registration, heartbeat."""
