SELECT $$ :no $$, $body$ it's :no $x$ $body$, $é$ :no $é$, $_1$ :no $_1$, a$b, x$1 FROM t WHERE c = :yes AND d = :yes::text AND e = arr[1:2]
