"""The operator API: one public function per verb, each returning a typed result."""
