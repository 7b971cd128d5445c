"""Model definitions (torch). Import these only where torch is needed."""
