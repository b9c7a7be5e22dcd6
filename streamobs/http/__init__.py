"""The one HTTP stack: deadline-bound exchanges with kernel stamps at both ends."""
