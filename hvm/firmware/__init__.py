"""What firmware would hand a guest, for when hvm boots a kernel directly and stands in for it."""
