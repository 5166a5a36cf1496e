"""A small generated multilingual corpus to train the tiny SentencePiece models of the Pocket TTS
fixtures (see ``make_reference.py``). Deterministic: the same list on every run."""

import random

SENTENCES = {
    "en": [
        "Hello world. I am Kyutai's Pocket TTS.",
        "I'm fast enough to run on small CPUs, and I hope you'll like me.",
        "The quick brown fox jumps over the lazy dog.",
        "It's 3.5 degrees outside; bring a coat, a hat and gloves.",
        "Dr. Smith arrived at 10:30 a.m. on Monday, didn't he?",
        "She said: \"We won't stop now!\"",
        "How much is it? About $12.99, or 15 euros.",
        "They've been waiting since 2019 for the results.",
        "What a beautiful morning it is!",
        "Please call me back at 555-0199 before noon.",
        "The meeting starts at nine o'clock sharp.",
        "We're going to the market to buy apples, bread and cheese.",
        "Can you hear the birds singing in the garden?",
        "My brother's car is red, but mine is blue.",
        "The train leaves from platform 4 at 7.45 tonight.",
        "Reading books is one of my favourite things to do.",
        "You shouldn't have told them about the surprise party.",
        "Mr. and Mrs. Brown live at 221 Baker Street.",
        "Wait... are you sure about that?",
        "This is the first sentence. This is the second one. And here is a third.",
        "The results (see the table below) were better than expected.",
        "He called it “the best day ever” — and he meant it.",
        "Well… I don't know (maybe tomorrow).",
    ],
    "fr": [
        "Bonjour le monde. Je suis le TTS de poche de Kyutai.",
        "Je suis assez rapide pour fonctionner sur de petits CPU.",
        "J'espère que vous m'aimerez.",
        "L'été dernier, nous sommes allés à la plage près de Nice.",
        "Où est la gare ? Elle est à côté de l'hôtel.",
        "Il fait 21,5 degrés aujourd'hui ; c'est très agréable !",
        "Ça coûte 3 euros et 50 centimes.",
        "Les élèves étudient la géographie et l'histoire.",
        "Qu'est-ce que tu veux manger ce soir ?",
        "Noël approche, et les enfants sont très impatients.",
        "Elle a répondu : « Je ne sais pas. »",
        "Le garçon a mangé une crêpe au chocolat.",
        "Nous nous retrouverons à 18 h devant le théâtre.",
        "Il était une fois, dans un château lointain, une reine.",
        "Voulez-vous un café ou un thé ?",
    ],
    "de": [
        "Hallo Welt. Ich bin Pocket TTS von Kyutai.",
        "Ich bin schnell genug, um auch auf kleinen CPUs zu laufen.",
        "Ich hoffe, ich gefalle dir.",
        "Die Straße ist heute sehr nass und rutschig.",
        "Wir fahren am Wochenende mit dem Zug nach München.",
        "Das Mädchen isst gern Äpfel, Birnen und Kirschen.",
        "Es ist 12 Uhr, und ich habe großen Hunger!",
        "Können Sie mir bitte helfen?",
        "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
        "Der Preis beträgt 19,99 Euro.",
        "Möchtest du einen Kaffee oder lieber einen Tee?",
        "Die Kinder spielen fröhlich im Garten.",
        "Grüß Gott, wie geht es Ihnen?",
    ],
    "es": [
        "Hola mundo. Soy el Pocket TTS de Kyutai.",
        "Soy lo suficientemente rápido para funcionar en pequeñas CPU.",
        "Espero que te guste.",
        "¿Dónde está la estación de tren?",
        "¡Qué día tan bonito hace hoy!",
        "El niño comió una manzana y dos plátanos.",
        "Mañana vamos a la playa con mis amigos.",
        "La canción tiene un ritmo muy alegre.",
        "Son las 8:15 de la mañana, ¿ya desayunaste?",
        "El año pasado viajé a México y a Perú.",
        "Mi corazón late más rápido cuando corro.",
        "¿Cuántos años tienes? Tengo 27.",
    ],
    "it": [
        "Ciao mondo. Sono il Pocket TTS di Kyutai.",
        "Sono abbastanza veloce da funzionare su piccole CPU.",
        "Spero che ti piacerò.",
        "Perché non vieni con noi al mare?",
        "La città è bellissima, soprattutto di sera.",
        "Ho comprato tre libri e un quaderno.",
        "Il caffè è già pronto sul tavolo.",
        "Domani pioverà, quindi porta l'ombrello.",
        "Quanto costa questo? Costa 4,50 euro.",
        "L'università è vicino alla stazione.",
        "Più tardi andremo a vedere un film.",
    ],
    "pt": [
        "Olá mundo. Eu sou o Pocket TTS da Kyutai.",
        "Sou rápido o suficiente para rodar em CPUs pequenas.",
        "Espero que você goste de mim.",
        "Não sei se vou conseguir chegar a tempo.",
        "A lição de hoje é sobre a História do Brasil.",
        "Ele comprou pão, manteiga e café na padaria.",
        "Você já visitou Lisboa ou o Porto?",
        "São 6 horas e 40 minutos.",
        "A canção está tocando na rádio.",
        "Coração, ação e informação terminam em ão.",
        "Está calor; vamos à praia!",
    ],
    "nl": [
        "Hallo wereld. Ik ben Pocket TTS van Kyutai.",
        "Ik ben snel genoeg om op kleine CPU's te draaien.",
        "Ik hoop dat je me leuk vindt.",
        "Het weer is vandaag erg mooi.",
        "We gaan morgen met de fiets naar het strand.",
        "Dit is één van de mooiste steden van Europa.",
        "Hoeveel kost een kopje koffie? Ongeveer 2,80 euro.",
        "De kinderen spelen buiten in de tuin.",
        "Zij heeft gisteren een boek gelezen.",
        "Goedemorgen! Hoe gaat het met je?",
        "Ik woon al 12 jaar in Amsterdam.",
    ],
}

_NUMBER_TEMPLATES = [
    "There are {a} apples and {b} oranges.",
    "The total is {a}.{b} dollars.",
    "Il y a {a} pommes et {b} poires.",
    "Es sind {a} Grad, nicht {b}.",
    "Tengo {a} años y {b} hermanos.",
    "Sono le {a} e {b}.",
    "São {a} reais e {b} centavos.",
    "Het is {a} uur en {b} minuten.",
    "Call {a}-{b} now!",
]


def corpus_lines() -> list[str]:
    """Every sentence several times, plus number sentences with fixed pseudo-random numbers."""
    lines: list[str] = []
    for _ in range(4):
        for sentences in SENTENCES.values():
            lines.extend(sentences)
    rng = random.Random(1234)
    for _ in range(300):
        template = rng.choice(_NUMBER_TEMPLATES)
        lines.append(template.format(a=rng.randint(0, 2030), b=rng.randint(0, 99)))
    return lines
