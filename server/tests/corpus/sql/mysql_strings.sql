SELECT 'it\'s :no', "say \":no\"", 'a''b :no', `c``:no`, _utf8mb4'x :no', :yes
