"""Who lives on the demo portal: its sales managers and the names its customers are made of."""

MANAGERS = (
    (31, "Anna", "Petrova"),
    (32, "Dmitry", "Sokolov"),
    (33, "Elena", "Volkova"),
    (34, "Igor", "Morozov"),
    (35, "Maria", "Lebedeva"),
    (36, "Pavel", "Novikov"),
)
FIRST_NAMES = ("Alina", "Boris", "Daria", "Eva", "Ivan", "Ksenia", "Lev", "Nina", "Oleg", "Vera")
LAST_NAMES = ("Antonova", "Belov", "Gromova", "Zaitsev", "Karpova", "Lukin", "Sidorova", "Titov")
