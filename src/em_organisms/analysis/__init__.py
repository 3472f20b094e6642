"""Analyses of trained organisms: where the adapter turns during training, and when behaviour
follows (`em-organisms phase`)."""
