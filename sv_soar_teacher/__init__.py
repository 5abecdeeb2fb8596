"""sv-soar-teacher: the teacher environment (grounded SOAR reward); see the inner-loop issue."""
