"""The bundled restaurant grammar: E2E-style descriptions of a venue in one or two sentences.

Tokens follow Diffusion-LM's E2E preprocessing (punctuation split off, case kept, ``family -
friendly``, ``£ 20 - 25``). Slot names and values are those of the E2E NLG data set
(``difflm.text.corpora.SLOTS``). The rule format is described in
:mod:`difflm.text.grammar.pcfg`; in short, ``weight LHS -> RHS {slot=value}``, labels before
the first ``-``, ``_helpers`` spliced out of trees.
"""

from __future__ import annotations

from difflm.text.grammar.pcfg import Grammar

# Venue names (slot "name") and landmarks (slot "near") of the E2E data; the two sets are
# disjoint, so a venue is never "near" itself.
NAMES = (
    "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns", "Cocum",
    "Cotto", "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House", "Strada",
    "Taste of Cambridge", "The Cambridge Blue", "The Cricketers", "The Eagle", "The Golden Palace",
    "The Mill", "The Phoenix", "The Plough", "The Punter", "The Vaults", "The Waterman",
    "The Wrestlers", "Travellers Rest Beefeater", "Wildwood", "Zizzi",
)  # fmt: skip
LANDMARKS = (
    "All Bar One", "Avalon", "Burger King", "Café Brazil", "Café Rouge", "Café Sicilia", "Clare Hall",
    "Crowne Plaza Hotel", "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine",
    "Ranch", "The Bakers", "The Portland Arms", "The Rice Boat", "The Sorrento",
)  # fmt: skip

# Word -> UPOS tag, following spaCy's English conventions (copula and auxiliaries AUX,
# existential "there" and relative "which"/"that" PRON). Words with a second tag in some rule
# are written there as word/TAG.
LEXICON = {
    word: tag
    for tag, words in {
        "ADJ": "cheap pricey costly inexpensive affordable expensive moderate high low average top"
        " friendly suitable ideal great French Chinese Japanese Italian Indian English fast less more",
        "ADP": "in In by By on On near Near beside Beside to from with of for For at than under over out",
        "ADV": "moderately reasonably fairly highly poorly badly well also close Close next Next far where",
        "AUX": "is are does can be",
        "CCONJ": "and",
        "DET": "a an A An the The",
        "NOUN": "pub coffee shop restaurant place venue spot eatery establishment food cuisine dishes meals"
        " fare families children kids family kid child customer rating price prices range city centre center"
        " riverside river area town star Families Children Kids Customers Diners",
        "NUM": "1 3 5 20 25 30",
        "PART": "not",
        "PRON": "There there It it Its you which that",
        "PUNCT": ". , -",
        "SCONJ": "If",
        "SYM": "£",
        "VERB": "serves offers provides sells features welcomes allow located situated found Located"
        " Situated called named rated priced has serving offering eat enjoy get want like looking try"
        " visit rate",
    }.items()
    for word in words.split()
}

RULES = """
# ── A text: one sentence, or two where the second goes on about "It" ─────────────────────
5   ROOT -> S
5   ROOT -> S S-more

# ── The first sentence names the venue exactly once ─────────────────────────────────────
14  S -> NP-venue _vp .                               # The Eagle is a cheap pub .
4   S -> NP-there_initial VP-there .                  # There is a pub called The Eagle ...
2   S -> PP-front , NP-there VP-there .               # In the city centre , there is ...
2   S -> PP-front VP-inverted .                       # Near Burger King is a pub called ...
2   S -> VP-front , NP-venue _vp .                    # Located in the city centre , The Eagle ...
3   S -> NP-appositive _vp .                          # The Eagle , a cheap pub , serves ...
3   S -> NP-described _vp .                           # A cheap pub called The Eagle is ...
1   S -> SBAR-if , VP-imperative .                    # If you want Italian food , try The Eagle .
1   S -> PP-price_initial , NP-you VP-can_eat_at .    # For less than £ 20 , you can eat ...

# ── The second sentence adds slots ──────────────────────────────────────────────────────
6   S-more -> NP-it _vp .
2   S-more -> NP-it ADVP-also _vp .
2   S-more -> NP-its_rating VP-rating_is .
1   S-more -> NP-its_prices VP-prices_are .
1   S-more -> NP-its_price_range VP-price_range_is .
1   S-more -> NP-family_initial VP-are_welcome .
1   S-more -> NP-customers VP-rate .

1   NP-venue -> _name
1   NP-there_initial -> There
1   NP-there -> there
1   NP-it -> It
1   NP-it_object -> it
1   NP-you -> you
1   ADVP-also -> also
1   NP-its_rating -> Its _rating_noun
1   VP-rating_is -> is QP-rating
1   VP-rating_is -> is ADJP-rating_level
1   ADJP-rating_level -> _rating_level
1   NP-its_prices -> Its prices
1   VP-prices_are -> are ADJP-price_level
1   ADJP-price_level -> _price_level
2   NP-its_price_range -> Its price range
1   NP-its_price_range -> The price range
1   VP-price_range_is -> is QP-price
1   VP-price_range_is -> is ADJP-price_level
1   NP-family_initial -> Families
1   NP-family_initial -> Children
1   NP-family_initial -> Kids
1   VP-are_welcome -> are ADJP-welcome                {familyFriendly=yes}
1   VP-are_welcome -> are not ADJP-welcome            {familyFriendly=no}
1   ADJP-welcome -> welcome/ADJ
2   NP-customers -> Customers
1   NP-customers -> Diners
1   VP-rate -> rate NP-it_object QP-rating

# ── Sentence shapes around the name ─────────────────────────────────────────────────────
3   NP-appositive -> NP-venue , NP-kind ,
1   NP-appositive -> NP-venue , SBAR-rel ,
1   NP-appositive -> NP-venue , VP-located ,
1   NP-described -> NP-kind_initial VP-called
3   VP-called -> called NP-venue
1   VP-called -> named NP-venue
1   VP-there -> is/VERB NP-named
1   VP-inverted -> is NP-named
3   NP-named -> NP-kind_base VP-called
2   NP-named -> NP-kind_base VP-called _postmod
1   NP-named -> NP-kind_base _pp_place VP-called
2   VP-front -> Located _pp_place
1   VP-front -> Situated _pp_place
1   SBAR-if -> If S-if
1   S-if -> NP-you VP-want
2   VP-want -> want NP-food
1   VP-want -> like NP-food
1   VP-want -> are VP-looking
1   VP-looking -> looking PP-for
1   PP-for -> for NP-kind
2   VP-imperative -> _try NP-venue
1   VP-imperative -> _try NP-venue _pp_place
1   _try -> try
1   _try -> visit
1   PP-price_initial -> For QP-price
1   VP-can_eat_at -> can VP-eat_at
1   VP-eat_at -> _eat NP-food PP-at
1   PP-at -> at NP-venue

# ── Predicates of the venue ─────────────────────────────────────────────────────────────
5   _vp -> VP-atom
3   _vp -> VP-kind
2   _vp -> VP-and
1   _vp -> VP-kind_and
1   VP-kind -> is NP-kind
1   VP-and -> VP-atom and VP-atom
1   VP-kind_and -> VP-kind and VP-atom

3   VP-atom -> is ADJP-price_word
2   VP-atom -> is ADJP-price
2   VP-atom -> is ADJP-rated_c
1   VP-atom -> is ADJP-rated_v
2   VP-atom -> is ADJP-friendly                       {familyFriendly=yes}
3   VP-atom -> is not ADJP-friendly                   {familyFriendly=no}
1   VP-atom -> is ADJP-suitable                       {familyFriendly=yes}
1   VP-atom -> is not ADJP-suitable                   {familyFriendly=no}
1   VP-atom -> welcomes NP-family                     {familyFriendly=yes}
1   VP-atom -> does not VP-welcome                    {familyFriendly=no}
3   VP-atom -> is VP-located
2   VP-atom -> is _pp_place
1   VP-atom -> can VP-be_found
4   VP-atom -> _serves NP-food
3   VP-atom -> has NP-rating
2   VP-atom -> has NP-price
1   VP-atom -> is VP-rated

1   ADJP-price_word -> _price
2   ADJP-suitable -> suitable PP-for_family
1   ADJP-suitable -> ideal PP-for_family
1   ADJP-suitable -> great PP-for_family
1   PP-for_family -> for NP-family
1   VP-welcome -> welcome/VERB NP-family
1   VP-welcome -> allow NP-family
1   NP-family -> families
1   NP-family -> children
1   NP-family -> kids
2   VP-located -> located _pp_place
1   VP-located -> situated _pp_place
1   VP-be_found -> be VP-found
1   VP-found -> found _pp_place
1   VP-rated -> rated QP-rating
3   _serves -> serves
2   _serves -> offers
1   _serves -> provides
1   _serves -> sells
1   _serves -> features

# ── Describing the venue: a / an agreement splits nominals by their first sound ─────────
3   NP-kind -> _a_nom
2   NP-kind -> NP-kind_base _postmod
1   NP-kind_base -> _a_nom
3   _a_nom -> a _nom_c
1   _a_nom -> an _nom_v
3   NP-kind_initial -> A _nom_c
1   NP-kind_initial -> An _nom_v

4   _nom_c -> _head_c
3   _nom_c -> _food_c _head
4   _nom_c -> _eval_c _head
3   _nom_c -> _eval_c _food _head
1   _nom_c -> _eval_c , _eval _head
1   _nom_c -> ADJP-and_c _head
2   _nom_v -> _head_v
4   _nom_v -> _food_v _head
3   _nom_v -> _eval_v _head
2   _nom_v -> _eval_v _food _head
1   _nom_v -> _eval_v , _eval _head
1   _nom_v -> ADJP-and_v _head
1   ADJP-and_c -> _eval_c and _eval
1   ADJP-and_v -> _eval_v and _eval

3   _head -> _head_c
1   _head -> _head_v
4   _head_c -> pub                                    {eatType=pub}
4   _head_c -> coffee shop                            {eatType=coffee shop}
4   _head_c -> restaurant                             {eatType=restaurant}
1   _head_c -> place
1   _head_c -> venue
1   _head_c -> spot
1   _head_v -> eatery
1   _head_v -> establishment

4   _food -> _food_c
3   _food -> _food_v
3   _food_c -> _cuisine_c
1   _food_c -> _fast_food
1   _food_v -> _cuisine_v
1   _cuisine -> _cuisine_c
1   _cuisine -> _cuisine_v
1   _cuisine_c -> French                              {food=French}
1   _cuisine_c -> Chinese                             {food=Chinese}
1   _cuisine_c -> Japanese                            {food=Japanese}
1   _cuisine_v -> Italian                             {food=Italian}
1   _cuisine_v -> Indian                              {food=Indian}
1   _cuisine_v -> English                             {food=English}
1   _fast_food -> fast food                           {food=Fast food}

# Evaluative adjectives: price, rating, family-friendliness.
3   _eval -> _eval_c
1   _eval -> _eval_v
2   _eval_c -> _price_c
2   _eval_c -> ADJP-price
2   _eval_c -> ADJP-rated_c
1   _eval_c -> ADJP-stars
3   _eval_c -> ADJP-friendly                          {familyFriendly=yes}
2   _eval_v -> _price_v
1   _eval_v -> ADJP-rated_v
1   _price -> _price_c
1   _price -> _price_v
3   _price_c -> cheap                                 {priceRange=cheap}
1   _price_c -> pricey                                {priceRange=high}
1   _price_c -> costly                                {priceRange=high}
1   _price_v -> inexpensive                           {priceRange=cheap}
1   _price_v -> affordable                            {priceRange=cheap}
2   _price_v -> expensive                             {priceRange=high}
2   ADJP-price -> moderately priced                   {priceRange=moderate}
1   ADJP-price -> reasonably priced                   {priceRange=moderate}
1   ADJP-price -> fairly priced                       {priceRange=moderate}
2   ADJP-price -> high priced                         {priceRange=high}
1   ADJP-price -> low priced                          {priceRange=cheap}
2   ADJP-rated_c -> highly rated                      {customer rating=high}
1   ADJP-rated_c -> low rated                         {customer rating=low}
1   ADJP-rated_c -> poorly rated                      {customer rating=low}
1   ADJP-rated_c -> badly rated                       {customer rating=low}
1   ADJP-rated_c -> well rated                        {customer rating=high}
1   ADJP-rated_c -> top rated                         {customer rating=high}
1   ADJP-rated_v -> average rated                     {customer rating=average}
1   ADJP-stars -> 5 star                              {customer rating=5 out of 5}
1   ADJP-stars -> 3 star                              {customer rating=3 out of 5}
1   ADJP-stars -> 1 star                              {customer rating=1 out of 5}
3   ADJP-friendly -> family - friendly
2   ADJP-friendly -> family friendly
1   ADJP-friendly -> kid friendly
1   ADJP-friendly -> child friendly

# Post-modifiers of a description.
4   _postmod -> _pp_place
2   _postmod -> PP-with
3   _postmod -> SBAR-rel
2   _postmod -> VP-located
1   _postmod -> VP-serving
1   _postmod -> PP-price
1   _postmod -> _pp_place SBAR-rel
1   _postmod -> PP-with _pp_place
3   SBAR-rel -> WHNP-rel S-rel
1   SBAR-rel -> WHADVP-where S-where
1   WHNP-rel -> which
1   WHNP-rel -> that
3   S-rel -> VP-atom
1   S-rel -> VP-and
1   WHADVP-where -> where
1   S-where -> NP-you VP-can_eat
1   VP-can_eat -> can VP-eat
1   VP-eat -> _eat NP-food
2   _eat -> eat
1   _eat -> enjoy
1   _eat -> get
1   VP-serving -> serving NP-food
1   VP-serving -> offering NP-food
2   PP-with -> with NP-rating
1   PP-with -> with NP-price
1   PP-with -> with NP-food

# ── Food ────────────────────────────────────────────────────────────────────────────────
4   NP-food -> _food_np
1   NP-food -> _price _food_np                        # cheap Italian food
1   NP-food -> NP-food_base PP-price                  # Italian food for less than £ 20
1   NP-food_base -> _food_np
6   _food_np -> _cuisine _food_noun
1   _food_np -> _fast_food
4   _food_noun -> food
1   _food_noun -> cuisine
1   _food_noun -> dishes
1   _food_noun -> meals
1   _food_noun -> fare

# ── Price ───────────────────────────────────────────────────────────────────────────────
2   NP-price -> NP-price_head PP-price_of             # a price range of £ 20 - 25
2   NP-price -> a _price_level price range            # a moderate price range
1   NP-price -> _price_level prices
1   NP-price_head -> a price range
1   PP-price_of -> of QP-price
2   PP-price -> for QP-price
1   PP-price -> in NP-price_range
1   NP-price_range -> the _price_level price range
1   NP-price_range -> the QP-price price range
2   _price_level -> cheap                             {priceRange=cheap}
2   _price_level -> moderate                          {priceRange=moderate}
2   _price_level -> high                              {priceRange=high}
1   _price_level -> low                               {priceRange=cheap}
2   QP-price -> less than £ 20                        {priceRange=less than £ 20}
1   QP-price -> under £ 20                            {priceRange=less than £ 20}
2   QP-price -> £ 20 - 25                             {priceRange=£ 20 - 25}
2   QP-price -> more than £ 30                        {priceRange=more than £ 30}
1   QP-price -> over £ 30                             {priceRange=more than £ 30}

# ── Customer rating ─────────────────────────────────────────────────────────────────────
3   NP-rating -> NP-rating_head PP-rating_of          # a customer rating of 5 out of 5
2   NP-rating -> a _rating_level_c _rating_noun       # a high customer rating
1   NP-rating -> an _rating_level_v _rating_noun      # an average rating
1   NP-rating -> a QP-rating _rating_noun             # a 3 out of 5 rating
1   NP-rating_head -> a _rating_noun
1   PP-rating_of -> of QP-rating
2   _rating_noun -> customer rating
1   _rating_noun -> rating
2   _rating_level -> _rating_level_c
1   _rating_level -> _rating_level_v
1   _rating_level_c -> low                            {customer rating=low}
1   _rating_level_c -> high                           {customer rating=high}
1   _rating_level_v -> average                        {customer rating=average}
1   QP-rating -> 1 out of 5                           {customer rating=1 out of 5}
1   QP-rating -> 3 out of 5                           {customer rating=3 out of 5}
1   QP-rating -> 5 out of 5                           {customer rating=5 out of 5}

# ── Area and landmarks ──────────────────────────────────────────────────────────────────
4   _pp_place -> PP-area
3   _pp_place -> PP-near
1   _pp_place -> PP-near PP-area                      # ambiguous: the area may attach to the landmark
1   _pp_place -> PP-area PP-near
3   PP-area -> in NP-centre                           {area=city centre}
2   PP-area -> in NP-riverside_area                   {area=riverside}
1   PP-area -> by NP-riverside                        {area=riverside}
1   PP-area -> on NP-riverside                        {area=riverside}
4   NP-centre -> the city centre
1   NP-centre -> the city center
1   NP-centre -> the city centre area
1   NP-centre -> NP-centre_head PP-of_town
1   NP-centre_head -> the centre
1   PP-of_town -> of NP-town
1   NP-town -> town
1   NP-town -> the city
2   NP-riverside_area -> the riverside area
1   NP-riverside_area -> riverside
2   NP-riverside -> the riverside
1   NP-riverside -> the river
3   PP-near -> near NP-landmark
1   PP-near -> close to NP-landmark
1   PP-near -> next to NP-landmark
1   PP-near -> not far from NP-landmark
1   PP-near -> beside NP-landmark
4   NP-landmark -> _landmark
1   NP-landmark -> NP-landmark_base PP-area           # Burger King in the city centre
1   NP-landmark_base -> _landmark

# Sentence-initial forms.
3   PP-front -> In NP-centre                          {area=city centre}
2   PP-front -> In NP-riverside_area                  {area=riverside}
1   PP-front -> By NP-riverside                       {area=riverside}
1   PP-front -> On NP-riverside                       {area=riverside}
3   PP-front -> Near NP-landmark
1   PP-front -> Close to NP-landmark
1   PP-front -> Next to NP-landmark
1   PP-front -> Beside NP-landmark
"""


def _name_rules(lhs: str, slot: str, names: tuple[str, ...]) -> str:
    """One rule per name; "The" is DET, "of" and "by" ADP, every other word PROPN."""
    tags = {"The": "DET", "of": "ADP", "by": "ADP"}
    lines = []
    for name in names:
        words = " ".join(f"{w}/{tags.get(w, 'PROPN')}" for w in name.split())
        lines.append(f"1 {lhs} -> {words} {{{slot}={name}}}")
    return "\n".join(lines)


def restaurant_grammar() -> Grammar:
    """Builds the restaurant grammar; sampled sentences have 5 to 40 tokens."""
    names = _name_rules("_name", "name", NAMES), _name_rules("_landmark", "near", LANDMARKS)
    text = "\n".join([RULES, *names])
    return Grammar.from_text(text, LEXICON, start="ROOT", length_range=(5, 40))
