SELECT E'\'' || :a, e'\\' || :b, 'a\' || :c, E'it''s :no', U&'d\0061t\+000061 :no', B'101', X'1F', typE'x\' || :d
