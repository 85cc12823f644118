"""Table schemas and the feature spec: JSON data, installed as ``recs._schemas``."""
