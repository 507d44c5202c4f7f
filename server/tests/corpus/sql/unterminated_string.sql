SELECT 'abc :x
