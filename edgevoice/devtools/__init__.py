"""Tools for developing edgevoice: test fixtures and benchmark inputs, never needed at run time."""
