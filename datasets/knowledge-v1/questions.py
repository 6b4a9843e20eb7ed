# ruff: noqa: E501  (questions read best on one line each)
"""The questions of knowledge-v1, written with the corpus; ``python3 questions.py`` writes
train.jsonl and test.jsonl (a fixed split per collection) and checks every answer against
its source file. Each tuple: source file, question, accepted answers."""

from __future__ import annotations

import html.parser
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KH = "kestrel-handbook"
AM = "aerolume-manual"
HC = "harrowgate-cookbook"

QUESTIONS: dict[str, list[tuple[str, str, list[str]]]] = {
    KH: [
        ("history.md", "In what year was Kestrel & Vane Instruments founded?", ["1987"]),
        (
            "history.md",
            "Who founded Kestrel & Vane Instruments together with Bram Vane?",
            ["Ottilie Kestrel"],
        ),
        (
            "history.md",
            "On which canal was the boathouse where Kestrel & Vane started?",
            ["Lindqvist"],
        ),
        ("history.md", "In which town did Kestrel & Vane Instruments begin?", ["Ferrowmouth"]),
        (
            "history.md",
            "What was the name of Kestrel & Vane's first product, a brass tide gauge?",
            ["Marrow"],
        ),
        (
            "history.md",
            "How many gauges did the Ferrowmouth harbour board buy in Kestrel & Vane's first order?",
            ["eleven", "11"],
        ),
        (
            "history.md",
            "In what year did Kestrel & Vane move into the former rope works?",
            ["1994"],
        ),
        ("history.md", "On which lane is the Kestrel & Vane head office?", ["Saltcellar Lane"]),
        (
            "history.md",
            "What is the main meeting room at the Kestrel & Vane head office called?",
            ["Ropewalk"],
        ),
        ("history.md", "When did Kestrel & Vane open the Drummond Yard workshop?", ["2011"]),
        ("history.md", "How many people does Kestrel & Vane employ today?", ["412"]),
        ("history.md", "In how many countries does Kestrel & Vane sell its instruments?", ["38"]),
        ("history.md", "What is Kestrel & Vane's best selling product line?", ["Skein"]),
        (
            "history.md",
            "Who owns all the shares of Kestrel & Vane?",
            ["Kestrel & Vane Trust", "the Trust"],
        ),
        (
            "history.md",
            "What percentage of Kestrel & Vane's profit is paid out as the yearly employee bonus?",
            ["9 percent", "9%", "nine percent"],
        ),
        (
            "history.md",
            "What is the name of the yearly profit-sharing bonus at Kestrel & Vane?",
            ["Tidewater"],
        ),
        (
            "history.md",
            "What is the company motto painted above the door of the Kestrel & Vane rope works?",
            ["True to the hundredth"],
        ),
        ("history.md", "Who is the managing director of Kestrel & Vane?", ["Pell Haversham"]),
        ("history.md", "Who is head of engineering at Kestrel & Vane?", ["Juniper Okonkwo-Lind"]),
        (
            "history.md",
            "On which day of the quarter does the board of the Kestrel & Vane Trust meet?",
            ["first Thursday"],
        ),
        (
            "history.md",
            "Which Kestrel & Vane value means a mistake is reported on the day it is found?",
            ["mend, do not hide"],
        ),
        (
            "leave.md",
            "How many days of annual leave does a full-time Kestrel & Vane employee get?",
            ["27", "twenty-seven"],
        ),
        (
            "leave.md",
            "How many days of annual leave does a Kestrel & Vane employee get after five years of service?",
            ["30", "thirty"],
        ),
        (
            "leave.md",
            "On what date does the Kestrel & Vane leave year start?",
            ["first of April", "1 April", "April 1"],
        ),
        (
            "leave.md",
            "How many unused leave days can a Kestrel & Vane employee carry over?",
            ["6", "six"],
        ),
        ("leave.md", "In which system do Kestrel & Vane employees book their leave?", ["Heron"]),
        (
            "leave.md",
            "Which week of the year does the Caldwick workshop of Kestrel & Vane close?",
            ["first week of August"],
        ),
        (
            "leave.md",
            "On what date is Founders' Day at Kestrel & Vane?",
            ["14th of May", "14 May", "May 14"],
        ),
        ("leave.md", "What is the free personal day at Kestrel & Vane called?", ["Quiet Day"]),
        (
            "leave.md",
            "By what time must a sick Kestrel & Vane employee call their team lead?",
            ["09:30", "9:30"],
        ),
        (
            "leave.md",
            "After how many working days of sickness does Kestrel & Vane need a doctor's note?",
            ["5", "five"],
        ),
        (
            "leave.md",
            "For how many days of sickness does Kestrel & Vane pay full salary?",
            ["20", "twenty"],
        ),
        (
            "leave.md",
            "How many weeks of parental leave on full pay do birth parents get at Kestrel & Vane?",
            ["26", "twenty-six"],
        ),
        (
            "leave.md",
            "How many weeks on full pay does the other parent get at Kestrel & Vane?",
            ["12", "twelve"],
        ),
        (
            "leave.md",
            "How many volunteering days a year may a Kestrel & Vane employee take?",
            ["3", "three"],
        ),
        ("leave.md", "Under what code are volunteering days booked at Kestrel & Vane?", ["VOL"]),
        (
            "expenses.md",
            "Within how many days must Kestrel & Vane expenses be claimed?",
            ["60", "sixty"],
        ),
        (
            "expenses.md",
            "On which day of the month does Kestrel & Vane pay approved expense claims?",
            ["25th", "25"],
        ),
        (
            "expenses.md",
            "Below what distance is the train the default for Kestrel & Vane business travel?",
            ["600 kilometres", "600"],
        ),
        ("expenses.md", "Who runs the Kestrel & Vane travel desk?", ["Tamsin Abernathy-Rowe"]),
        (
            "expenses.md",
            "How much does Kestrel & Vane pay per kilometre for driving your own car?",
            ["0.31"],
        ),
        (
            "expenses.md",
            "After what time are taxis allowed for Kestrel & Vane employees?",
            ["22:00"],
        ),
        (
            "expenses.md",
            "What is the nightly hotel limit at Kestrel & Vane outside capital cities?",
            ["140"],
        ),
        (
            "expenses.md",
            "What is the hotel limit per night in capital cities for Kestrel & Vane staff?",
            ["190"],
        ),
        (
            "expenses.md",
            "What is the daily meal allowance for Kestrel & Vane staff on a trip?",
            ["45"],
        ),
        (
            "expenses.md",
            "How much can a Kestrel & Vane employee spend on work equipment a year without asking?",
            ["400"],
        ),
        ("expenses.md", "What is the Kestrel & Vane company card called?", ["Osprey"]),
        (
            "expenses.md",
            "What is the monthly limit of the Kestrel & Vane company card?",
            ["2,500", "2500"],
        ),
        ("security.md", "How long must a Kestrel & Vane password be at least?", ["14"]),
        (
            "security.md",
            "How many hardware keys does Kestrel & Vane give each person?",
            ["two", "2"],
        ),
        (
            "security.md",
            "After how many minutes without use does a Kestrel & Vane laptop lock itself?",
            ["5", "five"],
        ),
        (
            "security.md",
            "Within how many hours must a lost Kestrel & Vane laptop be reported?",
            ["2", "two"],
        ),
        ("security.md", "What word marks a confidential document at Kestrel & Vane?", ["AMBER"]),
        ("security.md", "What colour badge do visitors wear at Kestrel & Vane?", ["green"]),
        ("security.md", "What is the Kestrel & Vane calibration laboratory called?", ["Stillroom"]),
        ("security.md", "Who is the security lead at Kestrel & Vane?", ["Desmond Quayle"]),
        (
            "offices.md",
            "What is the street address of the Kestrel & Vane head office?",
            ["17 Saltcellar Lane"],
        ),
        ("offices.md", "At what time does the Kestrel & Vane head office open?", ["07:00", "7:00"]),
        ("offices.md", "What is the canteen at the Kestrel & Vane head office called?", ["Galley"]),
        (
            "offices.md",
            "How much does the soup of the day cost for Kestrel & Vane employees?",
            ["2 euros", "2"],
        ),
        ("offices.md", "How many desks are there at the Kestrel & Vane head office?", ["140"]),
        (
            "offices.md",
            "Which floor is the quiet floor at the Kestrel & Vane head office?",
            ["third"],
        ),
        (
            "offices.md",
            "How many bicycles fit in the basement of the Kestrel & Vane head office?",
            ["90", "ninety"],
        ),
        (
            "offices.md",
            "Who manages the Drummond Yard workshop of Kestrel & Vane?",
            ["Rafferty Nwachukwu"],
        ),
        ("offices.md", "How much does Kestrel & Vane pay a year for safety shoes?", ["120"]),
        ("offices.md", "On which pier is the Kestrel & Vane Harbour Lab?", ["north pier", "north"]),
        (
            "offices.md",
            "How many parking spaces does the Kestrel & Vane head office have?",
            ["35", "thirty-five"],
        ),
        (
            "onboarding.md",
            "At what time does the first day of a new Kestrel & Vane employee start?",
            ["09:00", "9:00"],
        ),
        (
            "onboarding.md",
            "How many days does a new Kestrel & Vane employee spend at Drummond Yard in the first month?",
            ["two", "2"],
        ),
        (
            "onboarding.md",
            "How long is the probation period at Kestrel & Vane?",
            ["4 months", "four months"],
        ),
        (
            "onboarding.md",
            "How large is the yearly learning budget of a Kestrel & Vane employee?",
            ["1,200", "1200"],
        ),
        (
            "onboarding.md",
            "For how many weeks does the Kestrel & Vane library lend books?",
            ["4", "four"],
        ),
        ("contacts.md", "Who handles payroll questions at Kestrel & Vane?", ["Margit Oyelaran"]),
        ("contacts.md", "Who is the secretary of the Kestrel & Vane Trust?", ["Hollis Brandvold"]),
        (
            "contacts.md",
            "On which extension does the Kestrel & Vane IT service desk answer?",
            ["4400"],
        ),
        (
            "travel.md",
            "Under which code is a Kestrel & Vane travel request filed in Heron?",
            ["TRV"],
        ),
        (
            "travel.md",
            "At least how many working days before departure should a Kestrel & Vane travel request be sent?",
            ["12", "twelve"],
        ),
        (
            "travel.md",
            "Train journeys longer than how many hours may Kestrel & Vane staff book in first class?",
            ["3.5"],
        ),
        (
            "travel.md",
            "How much is taken off the Kestrel & Vane meal allowance when breakfast is included in the hotel price?",
            ["11 euros", "11"],
        ),
        ("travel.md", "What is the Kestrel & Vane travel insurance policy called?", ["Albatross"]),
        (
            "travel.md",
            "What is the Kestrel & Vane list of countries where extra care is needed called?",
            ["Lighthouse"],
        ),
        (
            "equipment.md",
            "After how many months are Kestrel & Vane laptops replaced?",
            ["42", "forty-two"],
        ),
        (
            "equipment.md",
            "For how much may a Kestrel & Vane employee buy their old laptop?",
            ["75 euros", "75"],
        ),
        ("equipment.md", "What is the Kestrel & Vane software catalogue called?", ["Chandlery"]),
        (
            "equipment.md",
            "How many instruments does the Kestrel & Vane loan pool hold?",
            ["64", "sixty-four"],
        ),
        (
            "equipment.md",
            "In which town are the reference standards of the Kestrel & Vane Stillroom checked each year?",
            ["Vellingham"],
        ),
        (
            "equipment.md",
            "What is the usual turnaround of a calibration in the Kestrel & Vane Stillroom?",
            ["6 working days", "six working days"],
        ),
        (
            "conduct.md",
            "How many hours is a full-time working week at Kestrel & Vane?",
            ["37", "thirty-seven"],
        ),
        (
            "conduct.md",
            "What are the meeting-free Wednesday afternoons at Kestrel & Vane called?",
            ["Bench Time"],
        ),
        (
            "conduct.md",
            "How much is the Kestrel & Vane home-working allowance per day worked from home?",
            ["3.40"],
        ),
        (
            "conduct.md",
            "What is the procedure for a complaint about how you are treated at Kestrel & Vane called?",
            ["Lantern"],
        ),
        ("conduct.md", "What is the Kestrel & Vane counselling service called?", ["Mooring"]),
        (
            "conduct.md",
            "What supplement is paid for overtime in the Kestrel & Vane workshop?",
            ["35 percent", "35%", "35"],
        ),
    ],
    AM: [
        (
            "overview.html",
            "For rooms of up to how many square metres is the Aerolume AL-7 made?",
            ["48"],
        ),
        ("overview.html", "In which town is the Aerolume AL-7 made?", ["Brisvik"]),
        (
            "overview.html",
            "What voltage is the power adapter of the Aerolume AL-7?",
            ["24 volts", "24"],
        ),
        (
            "overview.html",
            "How long is the cable of the Aerolume AL-7 power adapter?",
            ["1.8 metres", "1.8"],
        ),
        (
            "overview.html",
            "Which coin battery does the Aerolume AL-7 remote control use?",
            ["CR2032"],
        ),
        ("overview.html", "What is the model number of the European Aerolume AL-7?", ["AL-7-EU"]),
        ("overview.html", "How much does the Aerolume AL-7 weigh?", ["5.3 kg", "5.3"]),
        ("overview.html", "What are the dimensions of the Aerolume AL-7?", ["28 x 28 x 61"]),
        ("overview.html", "What is the clean air delivery rate of the Aerolume AL-7?", ["310"]),
        ("overview.html", "How loud is the Aerolume AL-7 at its lowest speed?", ["19 dB", "19"]),
        ("overview.html", "How loud is the Aerolume AL-7 at its highest speed?", ["52 dB", "52"]),
        (
            "overview.html",
            "How much power does the Aerolume AL-7 use at the highest speed?",
            ["38 W", "38"],
        ),
        (
            "overview.html",
            "How much power does the Aerolume AL-7 use in standby?",
            ["0.4 W", "0.4"],
        ),
        ("overview.html", "Which Wi-Fi band does the Aerolume AL-7 support?", ["2.4 GHz"]),
        (
            "overview.html",
            "What colour does the Aerolume AL-7 air quality ring glow when the air is poor?",
            ["red"],
        ),
        (
            "overview.html",
            "Which letter marks the particle sensor flap on the Aerolume AL-7?",
            ["S"],
        ),
        (
            "overview.html",
            "How far from walls should the Aerolume AL-7 stand?",
            ["30 centimetres", "30"],
        ),
        (
            "overview.html",
            "Above what humidity should the Aerolume AL-7 not be used?",
            ["85 percent", "85"],
        ),
        (
            "filters.html",
            "What percentage of 0.3 micrometre particles does the Aerolume AL-7 main filter catch?",
            ["99.95"],
        ),
        (
            "filters.html",
            "What is the part number of the Aerolume AL-7 replacement cartridge?",
            ["FX-4471"],
        ),
        (
            "filters.html",
            "How many months does an Aerolume AL-7 cartridge last in normal use?",
            ["7", "seven"],
        ),
        (
            "filters.html",
            "How long does an Aerolume AL-7 cartridge last in a home with smokers or pets?",
            ["4 months", "four months"],
        ),
        (
            "filters.html",
            "How often should the Aerolume AL-7 pre-filter be cleaned?",
            ["every 2 weeks", "2 weeks", "two weeks"],
        ),
        (
            "filters.html",
            "How many hours of cartridge life remain when the Aerolume AL-7 filter symbol starts blinking orange?",
            ["200"],
        ),
        (
            "filters.html",
            "To what speed does the Aerolume AL-7 drop when the filter counter reaches zero?",
            ["speed 2", "2"],
        ),
        (
            "filters.html",
            "How long do you hold the light button to reset the Aerolume AL-7 filter counter?",
            ["6 seconds", "six seconds"],
        ),
        (
            "filters.html",
            "From how many hours does the Aerolume AL-7 filter counter start again?",
            ["5,000", "5000"],
        ),
        (
            "operation.txt",
            "How long does the Aerolume AL-7 sensor take to warm up?",
            ["40 seconds", "40"],
        ),
        (
            "operation.txt",
            "In which mode does the Aerolume AL-7 start when it is switched on?",
            ["Auto"],
        ),
        (
            "operation.txt",
            "After how many hours does the Aerolume AL-7 Night mode switch back to Auto?",
            ["9", "nine"],
        ),
        (
            "operation.txt",
            "For how many minutes does the Aerolume AL-7 Turbo mode run?",
            ["20", "twenty"],
        ),
        ("operation.txt", "What is the longest timer on the Aerolume AL-7?", ["8 hours", "8"]),
        (
            "operation.txt",
            "Which two buttons lock the Aerolume AL-7 child lock?",
            ["speed and timer"],
        ),
        ("operation.txt", "What is the name of the Aerolume AL-7 app?", ["Aerolume Home"]),
        (
            "operation.txt",
            "How many days of history does the Aerolume AL-7 app keep?",
            ["30", "thirty"],
        ),
        (
            "operation.txt",
            "How long do you hold the buttons to reset the Aerolume AL-7 to factory settings?",
            ["11 seconds", "11"],
        ),
        (
            "operation.txt",
            "What colour does the Aerolume AL-7 ring flash after a factory reset?",
            ["purple"],
        ),
        (
            "troubleshooting.txt",
            "What does error code E1 mean on the Aerolume AL-7?",
            ["filter door"],
        ),
        (
            "troubleshooting.txt",
            "What does error code E3 mean on the Aerolume AL-7?",
            ["sensor is dirty", "dirty"],
        ),
        (
            "troubleshooting.txt",
            "What does error code E4 mean on the Aerolume AL-7?",
            ["fan motor is blocked", "blocked"],
        ),
        ("troubleshooting.txt", "What does error code E5 mean on the Aerolume AL-7?", ["too hot"]),
        (
            "troubleshooting.txt",
            "How long should an overheated Aerolume AL-7 cool before it is switched on again?",
            ["15 minutes", "15"],
        ),
        (
            "troubleshooting.txt",
            "How many years of warranty does the Aerolume AL-7 have?",
            ["3 years", "three years", "3"],
        ),
        (
            "troubleshooting.txt",
            "To how many years is the Aerolume AL-7 warranty extended after registering it in the app?",
            ["5 years", "five years", "5"],
        ),
        ("troubleshooting.txt", "When does the Aerolume service desk open?", ["08:30", "8:30"]),
        (
            "troubleshooting.txt",
            "With which letters does the Aerolume AL-7 serial number start?",
            ["AL7S"],
        ),
        (
            "troubleshooting.txt",
            "How far from the router can the Aerolume AL-7 be for the app to find it?",
            ["10 metres", "10"],
        ),
        (
            "air-quality.html",
            "How often does the Aerolume AL-7 sensor count fine dust?",
            ["every 2 seconds", "2 seconds"],
        ),
        (
            "air-quality.html",
            "Above what PM2.5 value does the Aerolume AL-7 ring turn yellow?",
            ["12"],
        ),
        (
            "air-quality.html",
            "Above what PM2.5 value does the Aerolume AL-7 ring turn red?",
            ["35"],
        ),
        (
            "air-quality.html",
            "How far from the head of the bed should the Aerolume AL-7 stand?",
            ["1 metre", "one metre"],
        ),
        (
            "air-quality.html",
            "How many times an hour does the Aerolume AL-7 change the air of a 48 square metre room?",
            ["2.5"],
        ),
        (
            "air-quality.html",
            "How much power does the Aerolume AL-7 use at speed 3?",
            ["14 W", "14"],
        ),
        (
            "air-quality.html",
            "What setting in the Aerolume app switches the AL-7 off when the air has been clean for an hour?",
            ["Eco"],
        ),
        (
            "air-quality.html",
            "How long does a sealed Aerolume AL-7 cartridge keep in storage?",
            ["2 years", "two years"],
        ),
        (
            "installation.txt",
            "What is the part number of the Aerolume AL-7 wall-mount kit?",
            ["WM-0716"],
        ),
        (
            "installation.txt",
            "How much weight does the Aerolume AL-7 wall bracket hold?",
            ["12 kg", "12"],
        ),
        (
            "installation.txt",
            "At least how high above the floor must the bottom grille of a wall-mounted Aerolume AL-7 be?",
            ["40 centimetres", "40"],
        ),
        (
            "installation.txt",
            "How far from radiators and cooking hobs should the Aerolume AL-7 stand?",
            ["1.5 metres", "1.5"],
        ),
        (
            "installation.txt",
            "How much free space should be left above the top vent of the Aerolume AL-7?",
            ["70 centimetres", "70"],
        ),
        (
            "installation.txt",
            "What is the part number of the Aerolume AL-7 castor base?",
            ["CB-0520"],
        ),
        (
            "connectivity.html",
            "How many schedules can an Aerolume AL-7 hold?",
            ["12", "twelve"],
        ),
        (
            "connectivity.html",
            "How many other people can the owner of an Aerolume AL-7 invite in the app?",
            ["6", "six"],
        ),
        (
            "connectivity.html",
            "From what time of night does the Aerolume AL-7 install firmware updates?",
            ["03:00", "3:00"],
        ),
        (
            "connectivity.html",
            "For how long does the Aerolume AL-7 keep its clock and schedules after a power cut?",
            ["72 hours", "72"],
        ),
        (
            "connectivity.html",
            "Which firmware version did the Aerolume AL-7 have when its manual was printed?",
            ["3.8.2"],
        ),
        (
            "connectivity.html",
            "What does the app code C4 mean for the Aerolume AL-7?",
            ["another account"],
        ),
        (
            "maintenance.html",
            "How many blades does the Aerolume AL-7 fan wheel have?",
            ["41", "forty-one"],
        ),
        (
            "maintenance.html",
            "What is the part number of the Aerolume AL-7 fan module?",
            ["FM-5519"],
        ),
        (
            "maintenance.html",
            "How long do you hold the light and speed buttons to calibrate the Aerolume AL-7 sensor?",
            ["8 seconds", "eight seconds"],
        ),
        (
            "maintenance.html",
            "What colour does the Aerolume AL-7 air quality ring glow during sensor calibration?",
            ["turquoise"],
        ),
        (
            "maintenance.html",
            "What is the part number of the Aerolume AL-7 remote control?",
            ["RC-7105"],
        ),
        (
            "maintenance.html",
            "How long does the battery of the Aerolume AL-7 remote control last?",
            ["18 months", "eighteen months"],
        ),
    ],
    HC: [
        ("bakery.md", "In what year was the Harrowgate bakery opened?", ["1952"]),
        ("bakery.md", "Who opened the Harrowgate bakery?", ["Edda Pellow"]),
        ("bakery.md", "What is the oven of the Harrowgate bakery called?", ["Dragon"]),
        ("bakery.md", "What wood is the Harrowgate bakery oven fired with?", ["beech"]),
        (
            "bakery.md",
            "For how many hours does the Harrowgate bakery oven hold its heat?",
            ["14", "fourteen"],
        ),
        ("bakery.md", "Who runs the Harrowgate bakery today?", ["Corin Pellow"]),
        ("bakery.md", "On which day is the Harrowgate bakery closed?", ["Monday"]),
        ("bakery.md", "What is the Harrowgate bakery's sourdough starter called?", ["Old Maud"]),
        ("bakery.md", "At what temperature is the Harrowgate bakery starter kept?", ["24"]),
        (
            "bakery.md",
            "How many days ahead must a large order be placed at the Harrowgate bakery?",
            ["10", "ten"],
        ),
        (
            "bakery.md",
            "On which lane is the care home the Harrowgate bakery delivers to?",
            ["Mill Lane"],
        ),
        ("recipes.md", "How long does the Harrowgate rye loaf bake?", ["52 minutes", "52"]),
        ("recipes.md", "At what temperature does the Harrowgate rye loaf bake?", ["215"]),
        ("recipes.md", "For how many hours does the Harrowgate rye loaf proof?", ["9", "nine"]),
        ("recipes.md", "What seeds are in the Harrowgate rye loaf?", ["caraway"]),
        (
            "recipes.md",
            "How long does the Harrowgate Well Street white loaf bake?",
            ["38 minutes", "38"],
        ),
        (
            "recipes.md",
            "What do the Harrowgate bakers call the sound of a cooling white loaf's crust cracking?",
            ["singing"],
        ),
        (
            "recipes.md",
            "In what year was the Harrowgate bakery's bread slicing machine bought?",
            ["1979"],
        ),
        (
            "recipes.md",
            "What are the Harrowgate bakery's midwinter saffron buns called?",
            ["Drowsy Cats"],
        ),
        (
            "recipes.md",
            "How many Harrow Crowns does the Harrowgate bakery make each Easter?",
            ["120"],
        ),
        (
            "recipes.md",
            "What fruit fills the Harrowgate bakery's fair day pies?",
            ["damsons", "damson"],
        ),
        (
            "recipes.md",
            "For how many minutes are the Harrowgate oat biscuits baked?",
            ["18", "eighteen"],
        ),
        (
            "recipes.md",
            "In what year did the Harrowgate bakery change its oat biscuit recipe?",
            ["1988"],
        ),
    ],
}


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def source_text(collection: str, name: str) -> str:
    text = (HERE / "collections" / collection / name).read_text(encoding="utf-8")
    if name.endswith(".html"):
        parser = _Text()
        parser.feed(text)
        text = " ".join(parser.parts)
    return " ".join(text.split()).lower()


def main() -> int:
    problems = []
    train, test = [], []
    rng = random.Random(18)
    for collection, items in QUESTIONS.items():
        prefix = "".join(word[0] for word in collection.split("-"))
        rows = []
        for number, (source, prompt, answers) in enumerate(items, 1):
            text = source_text(collection, source)
            if not any(answer.lower() in text for answer in answers):
                problems.append(f"{prefix}-{number:03d}: none of {answers} is in {source}")
            rows.append({"id": f"{prefix}-{number:03d}", "kind": collection,
                         "collection": collection, "source": source,
                         "prompt": prompt, "answers": answers})  # fmt: skip
        rng.shuffle(rows)
        cut = round(len(rows) * 0.55)
        train += rows[:cut]
        test += rows[cut:]
    for problem in problems:
        print(problem, file=sys.stderr)
    for name, rows in (("train", train), ("test", test)):
        lines = [json.dumps(row, ensure_ascii=False) for row in sorted(rows, key=lambda r: r["id"])]
        (HERE / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = {c: (sum(r["collection"] == c for r in train), sum(r["collection"] == c for r in test))
              for c in QUESTIONS}  # fmt: skip
    for collection, (a, b) in counts.items():
        print(f"{collection}: {a} train, {b} test")
    print(f"all: {len(train)} train, {len(test)} test")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
