"""Models: the networks, pretrained weights and their reader, optimisers,
schedules and losses."""
