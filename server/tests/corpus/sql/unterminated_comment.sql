SELECT 1 /* a /* b */ :x
