SELECT [a:b], `c:d`, "e"":f", 'g\' || :yes, ?7, @other, $other FROM t
